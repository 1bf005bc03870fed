"""kinemate.models"""
