"""Data: preparation and manifests, the P x K sampler, loading, augmentation."""
