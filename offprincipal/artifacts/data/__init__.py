"""The shared data layer of the renderers: what a renderer gets (:mod:`.context`), the checked
readers of its input files and every computation more than one renderer family uses (figures,
tables, the claims table). Nothing here draws: no module imports matplotlib."""
