"""gan-worker: the program each student runs to train the class DCGAN with a coordinator."""
