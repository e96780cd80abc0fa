"""Tree ensembles: random forests and gradient-boosted trees grown from histograms combined over
MPI."""
