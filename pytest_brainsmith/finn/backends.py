"""How a design's kernel backend choices (``MVAU: rtl``) reach FINN.

They travel in a segment's config under one pseudo-field, ``kernel_backends``, and
FINN reads them as the ``specialize_layers_config_file`` the runner writes from it
(``preferred_impl_style`` defaults). So a backend choice branches, and keys a cache
entry, exactly where that FINN field is read: before ``specialize_layers``.
"""

from __future__ import annotations

#: Pseudo-field under which kernel backend choices travel in a segment's config.
KERNEL_BACKENDS = "kernel_backends"
#: The FINN config field that carries them into FINN.
READ_AS = "specialize_layers_config_file"


def field_read(config_field: str) -> str:
    """The FINN config field a step must read to see ``config_field``."""
    return READ_AS if config_field == KERNEL_BACKENDS else config_field
