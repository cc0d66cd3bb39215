import keras


class ConfigModel(keras.Model):
    """A functional model whose config is its constructor arguments.

    The base of `ViTBackbone` and `Segmenter`, as keras-hub's `Backbone`: a
    subclass builds its graph in `__init__` (passing `dtype` to its layers
    and to `super().__init__`) and returns `{**super().get_config(), ...}`
    with its own arguments. This class adds `name`, `trainable` and the
    dtype policy, and `from_config` turns a serialized policy back into one
    before calling the constructor.
    """

    def __setattr__(self, name, value):
        # On PyTorch a keras.Model is a torch Module, which refuses sub-layers
        # before `Module.__init__` (it creates `_modules`): the subclasses create
        # their layers before `super().__init__`, and the functional graph tracks them.
        if keras.config.backend() == "torch" and "_modules" not in vars(self):
            if not isinstance(getattr(type(self), name, None), property):
                return object.__setattr__(self, name, value)
        return super().__setattr__(name, value)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.saving.serialize_keras_object(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.saving.deserialize_keras_object(config["dtype"])
        return cls(**config)
