"""kinemate.pose"""
