"""A teacher must speak the student's vocabulary.

GKD and distillation compare whole next-token distributions position by position, so token id
$v$ must mean the same token in both models and both must output the same number of logits.
TRL does not check this: a teacher from another model family either crashes deep inside the
loss or, worse, trains the student towards the wrong tokens. We check from the tokenizers and
configs alone, before any weights are loaded.
"""

from transformers import AutoConfig, AutoTokenizer


class TeacherError(ValueError):
    """The teacher cannot teach this student. The message is one line."""


def _logit_count(config) -> int:
    return config.get_text_config().vocab_size


def check_teacher(student_tokenizer, student_path: str, teacher_path: str, **load_kwargs) -> None:
    """Raise TeacherError unless the teacher shares the student's tokenizer and logit width."""
    try:
        teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_path, **load_kwargs)
        teacher_config = AutoConfig.from_pretrained(teacher_path, **load_kwargs)
        student_config = AutoConfig.from_pretrained(student_path, **load_kwargs)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TeacherError(f"teacher {teacher_path}: cannot load it ({first_line})") from None

    student_vocab, teacher_vocab = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    differing = sum(teacher_vocab.get(token) != i for token, i in student_vocab.items())
    differing += len(teacher_vocab.keys() - student_vocab.keys())
    if differing:
        raise TeacherError(
            f"teacher {teacher_path}: its tokenizer differs from the student's ({differing} of "
            f"{len(teacher_vocab)} tokens have another id); expected a teacher with the student's "
            "tokenizer, e.g. a larger model of the same family"
        )
    student_logits, teacher_logits = _logit_count(student_config), _logit_count(teacher_config)
    if student_logits != teacher_logits:
        raise TeacherError(
            f"teacher {teacher_path}: it outputs {teacher_logits} logits per token and the "
            f"student {student_logits}; expected the same vocabulary size in both configs"
        )
