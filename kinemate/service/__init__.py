"""kinemate.service"""
