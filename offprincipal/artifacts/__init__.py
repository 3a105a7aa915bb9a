"""The paper's artifacts: what each one is, what it reads, how it is rendered and recorded.

* :mod:`.catalogue` — the one definition of the artifacts (name, kind, needs, title, caption,
  renderer); the workflow reads it without loading matplotlib.
* :mod:`.inputs` — the files each artifact reads under the result layout (what the rules declare).
* :mod:`.render` — resolves an artifact's renderer and writes its figure or table files.
* :mod:`.provenance` — each artifact's provenance sidecar and ``offprincipal verify``.

Nothing is imported here, so reading the catalogue stays cheap.
"""
