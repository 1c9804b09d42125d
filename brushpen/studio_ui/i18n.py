"""The studio's labels in Korean: Gradio's i18n, keyed by the English label itself.

`t("Brief")` marks a label for translation; the page shows it in the language picked in Gradio's
Settings panel (footer), which starts at the browser's language. A label with no entry in `KO`
shows in English. Values the server sends (statuses, tables, copy) are not translated.
"""

from __future__ import annotations

import gradio as gr

KO = {
    # tabs and buttons
    "Images": "이미지", "Copy": "카피", "Checker": "판별기", "History": "기록", "Models": "모델",
    "Export": "내보내기", "Fine-tune": "파인튜닝", "Generate": "생성", "Write": "작성", "Check": "검사",
    "Walk": "이동", "Refresh": "새로고침", "Job queue": "작업 대기열", "Open batches and jobs": "진행 중인 배치와 작업",
    "Workers": "워커", "Refresh the queue": "대기열 새로고침", "Cancel": "취소", "Start fine-tune": "파인튜닝 시작",
    "Send to Images": "이미지 탭으로 보내기", "Send to checker": "판별기로 보내기", "🎲 Random": "🎲 무작위",
    "PNG info": "PNG 정보", "Sampling": "샘플링", "Seed walk": "시드 이동",
    # images
    "Model": "모델", "Number of images": "이미지 수", "Truncation ψ": "절단 ψ",
    "Seed (-1: random)": "시드 (-1: 무작위)",
    "Style-mix seed (-1: off)": "스타일 혼합 시드 (-1: 끔)", "Style-mix crossover layer": "스타일 혼합 교차 층",
    "Negative prompt": "제외 프롬프트", "Steps": "단계 수", "Guidance (CFG scale)": "가이던스 (CFG 배율)",
    "Width": "너비", "Height": "높이", "Scheduler (default: the pipeline's own)": "스케줄러 (기본: 파이프라인 기본값)",
    "Backend": "백엔드", "Backend (onnx: noise off, no style mix)": "백엔드 (onnx: 노이즈 끔, 스타일 혼합 없음)",
    "From seed": "시작 시드", "To seed": "끝 시드", "Frames": "프레임 수", "Format": "형식",
    "Seed walk (animated)": "시드 이동 (애니메이션)", "Drop an image made here": "여기서 만든 이미지를 놓으세요",
    "settings": "설정",
    # copy
    "Brief": "브리프", "Kind": "종류", "Language": "언어", "Tone": "어조", "Audience": "대상", "Variants": "변형 수",
    "Deliberate: draft, check, pick": "숙고: 초안, 검사, 선택", "Drafts per variant": "변형당 초안 수",
    "Temperature (0: greedy)": "온도 (0: 탐욕적)", "Top-p": "Top-p", "Top-k (0: off)": "Top-k (0: 끔)",
    "Repetition penalty": "반복 페널티", "Max new tokens": "최대 새 토큰 수",
    "off: plain sampling, streamed token by token": "끄면: 일반 샘플링, 토큰 단위 스트리밍",
    # checker
    "Images or a zip": "이미지 또는 zip", "Answer out-of-scope for non-photos": "사진이 아니면 범위 밖으로 답하기",
    "Verdicts (click a header to sort)": "판정 (머리글을 눌러 정렬)", "Report (CSV)": "보고서 (CSV)",
    "Heatmaps": "히트맵", "Report": "보고서", "Content Credentials": "콘텐츠 자격 증명",
    "Auto: search the settings within a budget": "자동: 예산 안에서 설정 탐색", "Budget (minutes)": "예산 (분)",
    "At most this many trials (0: as the budget allows)": "최대 시도 수 (0: 예산만큼)", "Trials (Auto)": "시도 (자동)", "Download all (zip)": "모두 내려받기 (zip)",
    # history, models, export, fine-tune
    "Recent images and walks": "최근 이미지와 이동", "Recent copy": "최근 카피", "Models in the store": "저장소의 모델",
    "Adapters in the store": "저장소의 어댑터", "metrics.json": "metrics.json",
    "int8 (static QDQ for convnets, blockwise int8 MatMul for the LM)":
    "int8 (합성곱망은 정적 QDQ, LM은 블록 단위 int8 MatMul)",
    "distil a student (GAN, detector)": "학생 모델 증류 (GAN, 판별기)", "Base model": "기반 모델",
    "Training data (.zip or .jsonl)": "학습 데이터 (.zip 또는 .jsonl)", "Adapter name": "어댑터 이름",
    "LoRA rank": "LoRA 랭크", "Length (GAN kimg / copy steps / detector steps; 0 = default)":
    "길이 (GAN kimg / 카피 단계 / 판별기 단계; 0 = 기본값)", "Job": "작업", "Events": "이벤트",
    "Federated (detector): sites that keep their images train one detector":
    "연합 학습 (판별기): 이미지를 각자 보관한 사이트들이 판별기 하나를 함께 학습", "Federated": "연합 학습",
    "Sites": "사이트 수", "Split": "분할", "Strategy": "전략", "Rounds": "라운드 수",
    "Local steps per round": "라운드당 로컬 단계 수", "DP noise multiplier (0: off)": "DP 노이즈 배수 (0: 끔)",
}

I18N = gr.I18n(ko=KO)


def t(label: str) -> gr.i18n.I18nData:
    """`label`, translated on the page when the picked language has it."""
    return I18N(label)
