"""The machine and the processes: the device (`device`), torchrun's and srun's ranks
(`distributed`), signals (`signals`), the container we may be in (`container`), SLURM jobs
(`slurm`) and what breaks a first run (`health`, behind `python -m train.doctor`)."""
