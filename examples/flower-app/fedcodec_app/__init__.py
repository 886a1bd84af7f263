"""Federated MNIST-5k on Flower with fedcodec: a numpy MLP, Dirichlet-skewed partitions."""
