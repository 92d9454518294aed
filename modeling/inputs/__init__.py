"""The photo a user hands us, and the faces in it."""
