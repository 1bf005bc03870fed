"""kinemate.synth"""
