"""FX: cached market rates, tenant pricing, conversions and OTC approvals."""
