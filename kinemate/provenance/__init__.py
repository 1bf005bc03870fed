"""kinemate.provenance"""
