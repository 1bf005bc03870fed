from kinemate.cli import entry

entry()
