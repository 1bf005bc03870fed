"""kinemate.io"""
