from pybuild.cli.main import entry

entry()
