"""HTTP handlers: webhooks (providers call us), messages (the app asks us), health."""
