"""The local stack: protocol-faithful stand-ins for the cloud services the app uses.

Development and test tooling only; never deployed (see ``.funcignore``).
"""
