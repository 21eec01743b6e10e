"""The Azure permissions Palette needs, and whether a principal holds them.

* :mod:`shared.permissions.catalog`: the roles Spectro Cloud publishes (data files, with their
  source) and which of them a (profile, placement) needs at which scope;
* :mod:`shared.permissions.evaluate`: Azure RBAC's rules as pure functions
  (:func:`~shared.permissions.evaluate.missing_actions`).

What a principal holds at a scope is read by :mod:`shared.clients.authorization`.
"""
