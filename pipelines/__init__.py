"""tfzoo's pipelines: how a model is MADE (data -> training -> SavedModel export)."""
