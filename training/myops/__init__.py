"""MyoPS380 training side: dataset reader, synthetic CMR phantoms, 2D U-Net, training, evaluation, export."""
