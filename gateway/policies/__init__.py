"""Governance on the request path: policy enforcement (`enforce`), approvals in the store
(`approvals`) and `spendgate approvals` (`cli`). What the policies are is the config's
(`gateway.config.policies`)."""
