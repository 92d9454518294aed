from pipelines.avatar_pipeline import AvatarPipeline, View
from pipelines.pipeline_output import AvatarPipelineOutput, FaceMesh, ViewOutput

__all__ = ["AvatarPipeline", "AvatarPipelineOutput", "FaceMesh", "View", "ViewOutput"]
