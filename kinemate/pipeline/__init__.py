"""kinemate.pipeline"""
