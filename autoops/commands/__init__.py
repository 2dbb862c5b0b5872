"""The ``autoops`` commands, one module per group; each module registers its commands on the app
(``register(app)``) and autoops/cli.py assembles them. A command parses its options, calls the
module that does the work and hands the result to GitHub's outputs and summary."""
