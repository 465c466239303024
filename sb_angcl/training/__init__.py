"""The SpeechBrain Brain and what only it uses: non-finite steps, epoch statistics, checkpoints, LR schedule."""
