"""Legacy networks. `base` holds the interface; each subpackage is one network."""
