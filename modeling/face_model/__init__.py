"""The face model: topology, UV layout, symmetry and landmark correspondence."""
