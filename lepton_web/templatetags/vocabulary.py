"""``{% load vocabulary %}``: the words of ``lepton_web.vocabulary`` as template filters."""

from django import template

from lepton_web import vocabulary

register = template.Library()


@register.filter
def word(code: object) -> str:
    """``{{ run.task|word }}`` -> ``Single-label classification``."""
    return vocabulary.word(code)


@register.filter
def metric(code: str) -> str:
    """``{{ name|metric }}`` -> ``validation macro-F1``."""
    return vocabulary.metric(str(code))


@register.filter
def number(value: object) -> str:
    """``{{ 1.0|number }}`` -> ``1``; ``{{ 5e-05|number }}`` -> ``5e-5``."""
    return vocabulary.number(value)


@register.filter
def duration_ms(value: int | float | None) -> str:
    """``{{ annotation.time_spent_ms|duration_ms }}`` -> ``2.3 s``."""
    return vocabulary.duration_ms(value)


@register.filter
def deployment_action(code: str) -> str:
    """``{{ event.action|deployment_action }}`` -> ``Rolled back``."""
    return vocabulary.deployment_action(str(code))


@register.filter
def parameter_value(value: object, name: str) -> str:
    """``{{ value|parameter_value:name }}``: ``None`` learning rate -> the method's default."""
    return vocabulary.parameter_value(name, value)


@register.filter
def counted(value: int | float, nouns: str) -> str:
    """``{{ n|counted:"epoch" }}`` or ``{{ n|counted:"class,classes" }}`` -> ``1 epoch``."""
    singular, _, plural = nouns.partition(",")
    return vocabulary.count(value, singular, plural or None)
