"""Billing: fees into monthly invoices per tenant, with subscription plans."""
