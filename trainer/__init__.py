"""DPO and SFT training with torch + transformers (``prefloop train`` / ``prefloop sft``).

Entry points: ``trainer.dpo.train(TrainConfig)`` and ``trainer.sft.train_sft(TrainConfig)``, both running the
loop in ``trainer.loop``. Modules: ``config`` (settings), ``tokenize`` (prompt formats, TRL's boundary rule,
truncation), ``packing`` (prompt-once packed rows, batch order), ``logps`` (completion log-probs and the one
module DDP/FSDP wrap), ``losses`` (the preference losses), ``refcache`` (reference log-probs on disk), ``load``
(the model, with one-line errors), ``lora`` (LoRA/QLoRA through peft), ``distributed`` (torchrun, DDP, FSDP2),
``checkpoint`` (resumable, fingerprinted, no pickle code), ``interrupt`` (Ctrl-C/SIGTERM),
``optim``, ``metrics``.

It may import only the foundation (``prefloop``); the application (``loop``) imports it.
"""
