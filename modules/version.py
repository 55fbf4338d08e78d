"""The version written into every image's infotext (`Version: ...`)."""

VERSION = "v0.1.0"
