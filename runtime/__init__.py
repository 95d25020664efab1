"""Running MOVA on a machine: the one load path, weight streaming, memory planning, downloads."""
