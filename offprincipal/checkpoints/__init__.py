"""Checkpoint access: tensor-name classification (:mod:`.naming`), streaming safetensors
reading and pair alignment (:mod:`.reader`), Hub downloads (:mod:`.hub`) and the small
synthetic pairs the pipeline builds itself (:mod:`.synthetic`)."""
