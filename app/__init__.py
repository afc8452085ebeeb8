"""Streamlit front end of cvdd (`streamlit run app/main.py`); reads run folders only."""
