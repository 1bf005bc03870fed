"""kinemate.train"""
