"""Figure renderers, one module per family; each function takes a ``Context`` and returns a
matplotlib figure (``offprincipal.render`` saves it as PDF and PNG). Which function renders
which artifact is said once, in the catalogue (``offprincipal.artifacts.ARTIFACTS``)."""
