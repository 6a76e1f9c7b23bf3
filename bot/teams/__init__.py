"""Microsoft Teams adapter: the only package that imports botbuilder (so the SDK can be swapped here alone)."""
