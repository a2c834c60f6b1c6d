"""The embedded demo: :mod:`slimdiar.demo.run` runs it, :mod:`slimdiar.demo.report` reports it."""
