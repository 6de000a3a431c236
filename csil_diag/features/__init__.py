"""The --input spec, feature sources, normalisation and demo feature loading."""
