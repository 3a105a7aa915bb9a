"""Checkpoint access: tensor-name classification (:mod:`.naming`), streaming safetensors
reading and pair alignment (:mod:`.reader`), Hub downloads (:mod:`.hub`), directories on disk
(:mod:`.local`), raw verl FSDP shards merged to bf16 safetensors (:mod:`.verl`) and the small
synthetic pairs the pipeline builds itself (:mod:`.synthetic`)."""
