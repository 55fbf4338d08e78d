"""Checkpoints: finding them on disk, downloading them (`fetch`, `downloadable`, `downloads`),
hashing, telling architectures apart, converting between the diffusers and A1111 (LDM) key
layouts, and loading them offline from the configs shipped in `configs/`. Nothing here knows
about the UI or about sampling."""
