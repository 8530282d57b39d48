"""The ``bertops`` command line (:mod:`bertops.cli.main`), the one entry point of every
component. It imports each component's CLI lazily, so it works in a torch-free install.
"""
