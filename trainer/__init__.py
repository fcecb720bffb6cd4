"""DPO, SimPO, ORPO, KTO and SFT training with torch + transformers (``prefloop train`` / ``prefloop sft``).

Entry point: ``trainer.train.train(TrainConfig)`` runs the objective ``objective`` names (declared in
``trainer.objectives``: ``dpo``, ``simpo``/``orpo`` in ``objectives_pref``, ``kto``, ``sft``) through the loop in
``trainer.loop``; ``reference`` gives the reference log-probs to the objectives that declare one. Modules: ``config`` (settings), ``tokenize`` (prompt formats, TRL's boundary rule,
truncation), ``packing`` (prompt-once packed rows, batch order), ``logps`` (completion log-probs and the one
module DDP/FSDP wrap), ``losses`` (the preference losses), ``refcache`` (reference log-probs on disk), ``load``
(the model, with one-line errors), ``lora`` (LoRA/QLoRA through peft), ``distributed`` (torchrun, DDP, FSDP2),
``checkpoint`` (resumable, fingerprinted, no pickle code), ``interrupt`` (Ctrl-C/SIGTERM),
``optim``, ``metrics``.

It may import only the foundation (``prefloop``); the application (``loop``) imports it.
"""
