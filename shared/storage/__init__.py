"""The store (SQL through SQLModel): server-only, needs the ``server`` extra.

Kept out of the package's top level so that every module directly under
``ssehub`` imports on the light install (``pip install ssehub``, publishers).
"""
