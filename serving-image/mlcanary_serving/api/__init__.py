"""The HTTP layer: endpoints by protocol (``simple``, ``v2``, ``ops``), the shared prediction path,
the one error map, and the OpenAPI document. ``mlcanary_serving.app.create_app`` assembles them."""
