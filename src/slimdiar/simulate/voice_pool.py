"""The voices of the built-in pool, chosen by ``tools/voice_pool.py`` (do not edit).

Measured pairwise distinct; see docs/simulate.md and docs/voice-pool.json.
"""

from slimdiar.simulate.tts import VoiceSpec

VOICE_POOL: tuple[VoiceSpec, ...] = (
    VoiceSpec('flite', 'slt', -300, 0.92),
    VoiceSpec('flite', 'rms', -300, 1.0),
    VoiceSpec('flite', 'awb', -300, 1.08),
    VoiceSpec('flite', 'awb', 0, 0.92),
    VoiceSpec('flite', 'kal', -300, 1.0),
    VoiceSpec('flite', 'kal', 0, 1.08),
    VoiceSpec('flite', 'kal', 300, 0.92),
    VoiceSpec('flite', 'rms', 0, 1.08),
    VoiceSpec('flite', 'kal16', -300, 0.92),
    VoiceSpec('espeak-ng', 'en-us+m7', -300, 0.92),
    VoiceSpec('flite', 'slt', 0, 1.0),
    VoiceSpec('flite', 'awb', 300, 1.0),
    VoiceSpec('espeak-ng', 'en-029+f1', 300, 0.92),
    VoiceSpec('espeak-ng', 'en-us+klatt', -300, 0.92),
    VoiceSpec('espeak-ng', 'en-us+klatt', 0, 1.0),
    VoiceSpec('espeak-ng', 'en-029+klatt', 300, 1.08),
    VoiceSpec('flite', 'kal16', 300, 1.08),
    VoiceSpec('espeak-ng', 'en-029+f4', 300, 0.92),
    VoiceSpec('espeak-ng', 'en-us+f5', 300, 1.0),
    VoiceSpec('espeak-ng', 'en-gb-scotland+f5', -300, 1.0),
    VoiceSpec('espeak-ng', 'en-029+f1', -300, 1.0),
    VoiceSpec('espeak-ng', 'en-029+f1', 0, 1.08),
    VoiceSpec('espeak-ng', 'en-us+f5', 0, 0.92),
    VoiceSpec('espeak-ng', 'en-gb-scotland+m7', 0, 0.92),
    VoiceSpec('espeak-ng', 'en-gb-scotland+m7', 300, 1.0),
    VoiceSpec('espeak-ng', 'en-029+m3', -300, 1.08),
    VoiceSpec('espeak-ng', 'en-us+f4', -300, 1.0),
    VoiceSpec('espeak-ng', 'en-us+m4', 300, 1.08),
    VoiceSpec('espeak-ng', 'en-029+m2', 0, 1.08),
)
