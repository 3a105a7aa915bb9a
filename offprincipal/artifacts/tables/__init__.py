"""Table renderers: :mod:`.paper` (Tables 1, 2, 4, 5 and Table 1 with accuracy) and
:mod:`.restoration` (the UV-restoration family). Each returns two frames, the CSV one at full
precision and the Markdown one for reading (:mod:`offprincipal.artifacts.render` writes them).
Their numbers come from the data layer (:mod:`offprincipal.artifacts.data`); no table module
imports a figure or the claims table."""
