"""The tenancy layer and the CrossGuard policy pack (issue #5)."""
