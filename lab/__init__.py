"""The cablab lab: three local VMs provisioned with provision/<variant>/ and checked with testinfra."""
