"""Figure renderers, one module per family; each function takes a ``Context`` and returns a
matplotlib figure (:mod:`offprincipal.artifacts.render` saves it as PDF and PNG). Which function
renders which artifact is said once, in the catalogue
(:data:`offprincipal.artifacts.catalogue.ARTIFACTS`). They draw only: their numbers come from
the data layer (:mod:`offprincipal.artifacts.data`), and no figure module imports a table or
the claims table."""
