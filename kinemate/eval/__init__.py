"""kinemate.eval"""
