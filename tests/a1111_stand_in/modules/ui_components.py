"""Follows modules/ui_components.py of A1111 1.10.1: InputAccordion is a checkbox (its value is the
enabled state, shown in the accordion header) whose ``with`` block is the accordion's content."""
import gradio as gr


class InputAccordion(gr.Checkbox):
    def __init__(self, value, **kwargs):
        self.accordion_id = (kwargs.get("elem_id") or "input-accordion") + "-accordion"
        label = kwargs.get("label", "Accordion")
        super().__init__(value=value, **kwargs)
        self.accordion = gr.Accordion(label=label, open=value, elem_id=self.accordion_id)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"
