"""ControlNets: what a file is (:mod:`.detect`, torch-free) and loading it offline (:mod:`.loader`)."""
